import sys

from petrel.cli import main

main(["egress", *sys.argv[1:]])
