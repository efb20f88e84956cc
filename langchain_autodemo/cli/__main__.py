"""``python -m langchain_autodemo.cli`` is ``autodemo``."""

from langchain_autodemo.cli import main

main()
