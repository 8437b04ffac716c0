import sys

if sys.argv[1:2] == ["gpu"]:
    from bench.gpu import main

    sys.exit(main(sys.argv[2:]))
if sys.argv[1:2] == ["host"]:
    from bench.host import main

    sys.exit(main(sys.argv[2:]))
from bench.suite import main

sys.exit(main())
