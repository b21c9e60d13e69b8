"""On-disk formats (episodes, RobotWorldBench pairs) and their streaming datasets."""
