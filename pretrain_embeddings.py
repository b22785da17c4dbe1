"""python pretrain_embeddings.py [data=imdb] [output=vectors.pt]"""

from rnnlab.pretrain_embeddings import main

if __name__ == "__main__":
    main()
