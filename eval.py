"""python eval.py ckpt_path=outputs/.../checkpoints/best.ckpt [split=valid]"""

from rnnlab.evaluate import main

if __name__ == "__main__":
    main()
