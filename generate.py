"""python generate.py ckpt_path=... prime="ROMEO:" length=600 temperature=0.8 [sampling=argmax] [top_k=N] [top_p=P]"""

from rnnlab.generate import main

if __name__ == "__main__":
    main()
