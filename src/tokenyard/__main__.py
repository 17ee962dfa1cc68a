"""`python -m tokenyard` runs the command line, so child processes need no installed script."""

from tokenyard.cli import main

main()
