"""``python -m jobledger``: the same command as the ``jobledger`` console script."""
from .cli import main

main(prog_name="jobledger")
