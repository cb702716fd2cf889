"""``python -m jobledger``: the same command as the ``jobledger`` console script."""
from .entry import main

main()
