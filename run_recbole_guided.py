"""Train and evaluate a Guided model (or any RecBole model) like RecBole's run_recbole.py.

    python run_recbole_guided.py --model=GuidedSASRec --dataset=ml-100k --epochs=20
"""

import sys

from recbole_guided.cli import main

if __name__ == "__main__":
    sys.exit(main())
