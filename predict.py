"""python predict.py ckpt_path=... text="..." [plot=true] | input=reviews.txt output=predictions.jsonl (a sentiment
classifier: P(positive); a language model: the surprisal of every symbol)"""

from rnnlab.predict import main

if __name__ == "__main__":
    main()
