import sys

from petrel.cli import main

main(["scheduler", *sys.argv[1:]])
