import sys

from petrel.cli import main

main(["ingress", *sys.argv[1:]])
