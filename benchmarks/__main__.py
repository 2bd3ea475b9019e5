from benchmarks.run import main
from minineo.cli.shared import run_script

run_script(main)
