"""python export.py ckpt_path=<checkpoint> format=onnx output=model.onnx"""

from rnnlab.export import main

if __name__ == "__main__":
    main()
