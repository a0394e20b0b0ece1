#!/usr/bin/env python3
"""Makes the worked example of `vte eval`: synthetic images of coloured shapes and questions whose answers
are known by construction, plus questions about the repository's sample image (assets/sample.png: a red
house with two windows and a door, a yellow sun at the top right, green hills, blue sky).

Standard library only (PNG written with zlib); deterministic (fixed seed). Run from anywhere:
    python3 examples/eval/make_questions.py
It rewrites examples/eval/images/*.png and examples/eval/questions.jsonl next to this script.

Question kinds and how they are scored by `vte eval` (--metric auto):
  colour / shape / position   "answer": one word                      -> exact match (GQA style)
  count                       "answers": ten human-style answers      -> VQAv2 accuracy (official rules)
  multiple choice             "answer": the letter, options in text   -> option letter (ScienceQA style)
  text only                   no image                                -> exact match
"""
import json
import os
import random
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 96
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40)}
SHAPES = ["square", "circle", "triangle"]
ORDER = ["red", "green", "blue", "yellow"]   # option order of the multiple-choice questions


def write_png(path, pixels):
    raw = b"".join(b"\x00" + bytes(v for px in row for v in px) for row in pixels)
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def inside(shape, cx, cy, r, x, y):
    if shape == "square":
        return abs(x - cx) <= r and abs(y - cy) <= r
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    # triangle pointing up: apex (cx, cy - r), base from (cx - r, cy + r) to (cx + r, cy + r)
    if y > cy + r or y < cy - r:
        return False
    half = r * (y - (cy - r)) / (2 * r)
    return abs(x - cx) <= half


def draw(shapes):
    """shapes: list of (shape, colour, cx, cy, r) on a white background."""
    img = [[(255, 255, 255)] * SIZE for _ in range(SIZE)]
    for y in range(SIZE):
        row = list(img[y])
        for shape, colour, cx, cy, r in shapes:
            for x in range(max(0, cx - r), min(SIZE, cx + r + 1)):
                if inside(shape, cx, cy, r, x, y):
                    row[x] = COLOURS[colour]
        img[y] = row
    return img


def choice_text(question, options):
    lines = [question] + [f"{'ABCD'[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines)


def main():
    rng = random.Random(18)
    os.makedirs(os.path.join(HERE, "images"), exist_ok=True)
    questions = []

    def add(image, text, **gold):
        questions.append({"question_id": len(questions) + 1, "image": image, "text": text, **gold})

    # One shape: its colour, its name, and the colour as a multiple-choice question.
    for i in range(4):
        shape, colour = SHAPES[i % 3], ORDER[(i + 1) % 4]
        name = f"images/single_{i}.png"
        write_png(os.path.join(HERE, name), draw([(shape, colour, 48, 48, 26)]))
        add(name, f"What colour is the {shape}? Answer with one word.", answer=colour)
        add(name, "What shape is shown? Answer with one word.", answer=shape)
        add(name, choice_text(f"What colour is the {shape}?", ORDER) + "\nAnswer with the option's letter from the given choices directly.",
            answer="ABCD"[ORDER.index(colour)])

    # Counts of squares: ten human-style answers, most of them right, a few off by one (as real annotators are).
    for i, count in enumerate([1, 2, 3, 4]):
        colour = ORDER[i]
        slots = [(24, 24), (72, 24), (24, 72), (72, 72)]
        rng.shuffle(slots)
        name = f"images/count_{i}.png"
        write_png(os.path.join(HERE, name), draw([("square", colour, x, y, 14) for x, y in slots[:count]]))
        wrong = rng.randint(1, 3)
        answers = [str(count)] * (10 - wrong) + [str(count + 1)] * wrong
        add(name, "How many squares are there? Answer with a number.", answers=answers)

    # Two shapes side by side: which side is the one asked about on.
    for i in range(4):
        a, b = rng.sample(ORDER, 2)
        sa, sb = rng.choice(SHAPES), rng.choice(SHAPES)
        name = f"images/pair_{i}.png"
        write_png(os.path.join(HERE, name), draw([(sa, a, 24, 48, 16), (sb, b, 72, 48, 16)]))
        asked, side = (a, "left") if i % 2 == 0 else (b, "right")
        shape = sa if side == "left" else sb
        add(name, f"Is the {asked} {shape} on the left or on the right? Answer with one word.", answer=side)

    # The repository's sample image (640x480: the image folder is examples/eval, so its path climbs two levels).
    sample = "../../assets/sample.png"
    add(sample, "What colour is the house? Answer with one word.", answer="red")
    add(sample, "What colour is the sun? Answer with one word.", answer="yellow")
    add(sample, "How many windows does the house have? Answer with a number.", answers=["2"] * 9 + ["3"])
    add(sample, "Is the sun on the left or on the right? Answer with one word.", answer="right")
    add(sample, choice_text("Where is the sun?", ["top left", "top right", "bottom left", "bottom right"]) +
        "\nAnswer with the option's letter from the given choices directly.", answer="B")

    # A text-only question (no image).
    questions.append({"question_id": len(questions) + 1, "text": "What is two plus two? Answer with a number.", "answer": "4"})

    with open(os.path.join(HERE, "questions.jsonl"), "w") as f:
        for q in questions:
            f.write(json.dumps(q) + "\n")
    print(f"wrote {len(questions)} questions and {len(os.listdir(os.path.join(HERE, 'images')))} images under {HERE}")


if __name__ == "__main__":
    main()
