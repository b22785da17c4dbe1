"""python numpy_rnn.py sine | python numpy_rnn.py chars --text FILE"""

from rnnlab.numpy_rnn import main

if __name__ == "__main__":
    main()
