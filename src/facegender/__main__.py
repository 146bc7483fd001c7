from facegender.cli import main

main()
