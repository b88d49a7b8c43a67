"""``python -m caffe2torch`` (also torchrun's ``-m caffe2torch`` target)."""
import sys

from caffe2torch.cli import main

if __name__ == "__main__":
    sys.exit(main())
