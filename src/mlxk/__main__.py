from mlxk.cli.main import main

raise SystemExit(main())
