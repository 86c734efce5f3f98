import sys

from petrel.cli import main

main(["bounce", *sys.argv[1:]])
