"""``python -m multiflow_pl.data.synthetic``: see :mod:`multiflow_pl.data.synthetic.cli`."""

from multiflow_pl.data.synthetic.cli import main

if __name__ == "__main__":
    main()
