from abcscribe.cli import main

main()
