from roboalign_env.cli import main

main()
