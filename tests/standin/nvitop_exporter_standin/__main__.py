import sys

from nvitop_exporter_standin.cli import main

sys.exit(main())
