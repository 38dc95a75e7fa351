from moenode.cli import main

main()
