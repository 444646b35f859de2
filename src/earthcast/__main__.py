from earthcast.cli import main

main()
