from petrel.cli import main

main()
