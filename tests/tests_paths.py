from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MOBY_DICK = SHARED_DATA / "moby-dick" / "pg2701.txt"
EWT = SHARED_DATA / "ud-english-ewt"
