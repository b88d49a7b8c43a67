"""``python -m caffe2torch``."""
import sys

from caffe2torch.cli import main

sys.exit(main())
