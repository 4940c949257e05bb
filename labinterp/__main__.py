from labinterp.cli import main

raise SystemExit(main())
