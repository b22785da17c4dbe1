"""python train.py task=ptb [experiment=ptb_medium] [trainer=gpu] [key=value ...]"""

from rnnlab.train import main

if __name__ == "__main__":
    main()
