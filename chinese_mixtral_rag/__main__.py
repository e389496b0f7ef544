from chinese_mixtral_rag.cli import main

raise SystemExit(main())
