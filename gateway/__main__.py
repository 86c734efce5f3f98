import sys

from petrel.cli import main

main(["gateway", *sys.argv[1:]])
