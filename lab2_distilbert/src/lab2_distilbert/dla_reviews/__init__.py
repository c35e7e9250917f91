"""dla-reviews: 500 short movie-review-like sentences written for this project (``lab2 … --data dla-reviews``).

It is NOT Rotten Tomatoes and holds no sentence of it or of any other corpus: each sentence joins a subject ("the
script", "the final act") and a verdict ("falls flat at every turn") from the lists in ``make.py``, which writes
the files. Balanced positive / negative (labels ``neg`` / ``pos``): train 280, validation 60, test 160
(every subject with every test verdict); the validation and test sentences use verdicts that training never
shows. It ships with lab2 so that `lab2 reproduce --profile quick` runs offline; numbers on it say nothing about Rotten Tomatoes.
"""

from pathlib import Path

NAME = "dla-reviews"
FOLDER = Path(__file__).parent  # train.csv, validation.csv, test.csv
