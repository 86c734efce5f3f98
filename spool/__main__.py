import sys

from petrel.cli import main

main(["spool", *sys.argv[1:]])
