from benchmarks.run import main
from minineo.boundary import run_script

run_script(main)
