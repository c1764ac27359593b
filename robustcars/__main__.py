from robustcars.cli.app import main

main()
