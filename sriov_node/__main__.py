from sriov_node.cli import main

main()
