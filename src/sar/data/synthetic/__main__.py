"""``python -m sar.data.synthetic``: see :mod:`sar.data.synthetic.cli`."""

from sar.data.synthetic.cli import main

if __name__ == "__main__":
    main()
