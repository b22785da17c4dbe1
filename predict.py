"""python predict.py ckpt_path=... text="..." [plot=true] | input=reviews.txt output=predictions.jsonl"""

from rnnlab.predict import main

if __name__ == "__main__":
    main()
