from common.cli import run_command

from .runs import main

run_command(main)
