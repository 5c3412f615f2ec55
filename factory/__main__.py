"""``python -m factory ...`` = the ``factory`` command (where the console script is not installed)."""
from factory.cli import main

main()
