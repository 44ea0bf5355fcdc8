from lvsha.cli import main

main(prog_name="lvsha")
