"""Hallo4 preference data: ratings CSV -> rewards (hand case), composite reward, best-vs-worst pairs, the eval
card proxy (hand case), and candidates rendered with real engines then scored by the real eval card."""
from __future__ import annotations

import wave

import numpy as np
import pytest
from PIL import Image

from talkinghead.errors import InputError
from talkinghead.interfaces.cli import main
from talkinghead.data.preference import engine_runner, generate_candidates, score_with_card
from talkinghead.train.preference import (Candidate, best_vs_worst, card_rewards, composite_reward, read_pairs,
                                          read_ratings, write_pairs)


def test_ratings_are_averaged_over_raters_and_mapped_to_rewards(tmp_path):
    csv = tmp_path / "r.csv"
    csv.write_text("audio,video,engine,align,fidelity,rater\n"
                   "a.wav,a_warp.mp4,warp,5,3,ann\n"
                   "a.wav,a_warp.mp4,warp,3,3,bob\n"
                   "a.wav,a_hallo.mp4,hallo,2,1,ann\n"
                   "a.wav,a_h3.mp4,hallo3,4,4,ann\n"
                   "b.wav,b_warp.mp4,warp,4,4,ann\n")
    cands = {c.video: c for c in read_ratings(csv)}
    warp = cands["a_warp.mp4"]
    assert (warp.r_align, warp.r_fidelity) == (0.75, 0.5)  # mean rating 4 -> 3/4, 3 -> 1/2
    assert warp.reward == pytest.approx(0.625) == composite_reward(0.75, 0.5)
    pairs = best_vs_worst(cands.values())
    assert len(pairs) == 1  # b.wav has a single candidate
    p = pairs[0]
    assert (p.winner, p.loser, p.winner_engine, p.loser_engine) == ("a_h3.mp4", "a_hallo.mp4", "hallo3", "hallo")
    assert p.margin == pytest.approx(0.75 - 0.125)
    assert best_vs_worst(cands.values(), min_margin=0.7) == []
    out = write_pairs(pairs, tmp_path / "pairs.jsonl")
    assert read_pairs(out) == pairs
    with pytest.raises(SystemExit) as e:
        main(["prefer", "ratings", str(csv), "-o", str(tmp_path / "cli.jsonl"), "--quiet"])
    assert e.value.code == 0
    assert read_pairs(tmp_path / "cli.jsonl") == pairs


def test_ties_give_no_pair_and_bad_ratings_are_refused(tmp_path):
    tie = [Candidate("a", "x", "e1", 0.5, 0.5), Candidate("a", "y", "e2", 0.25, 0.75)]
    assert best_vs_worst(tie) == []
    bad = tmp_path / "bad.csv"
    bad.write_text("audio,video,align,fidelity\na.wav,v.mp4,6,3\n")
    with pytest.raises(InputError, match="line 2: align must be from 1 to 5, got 6"):
        read_ratings(bad)
    bad.write_text("audio,video,align\na.wav,v.mp4,3\n")
    with pytest.raises(InputError, match="fidelity"):
        read_ratings(bad)


def test_card_proxy_hand_case():
    card = {"sync": {"confidence": 0.8, "offset_frames": 2}, "identity": {"distance_mean": 0.3, "threshold": 0.6},
            "mouth": {"sharpness_vs_ref": 0.9}}
    r_align, r_fid = card_rewards(card)
    assert r_align == pytest.approx(0.8 * (1 - 2 / 10)) and r_fid == pytest.approx(0.75)
    no_identity = {**card, "identity": {"distance_mean": None, "threshold": 0.6}}
    assert card_rewards(no_identity)[1] == pytest.approx(0.9)
    assert card_rewards({**card, "sync": {"confidence": None}}) is None
    assert card_rewards({"sync": {"confidence": 3.0, "offset_frames": 30}, "identity": {"distance_mean": 5.0,
                                                                                          "threshold": 0.6}}) == (0.0, 0.0)


def test_candidates_from_several_engines_scored_by_the_eval_card(tmp_path, astronaut, librivox):
    speech, _ = librivox
    audio = tmp_path / "a.wav"
    pcm = (np.clip(speech.samples[: int(2.0 * speech.sample_rate)], -1, 1) * 32767).astype("<i2")
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(speech.sample_rate)
        w.writeframes(pcm.tobytes())
    portrait = tmp_path / "p.png"
    Image.fromarray(astronaut.image).save(portrait)
    engines = {"warp": engine_runner("warp", size=192), "warp_still": engine_runner("warp", size=192, mouth_scale=0.0)}
    with pytest.raises(InputError):
        generate_candidates(portrait, [audio], {"warp": engines["warp"]}, tmp_path / "one")
    triples = generate_candidates(portrait, [audio], engines, tmp_path / "cands")
    assert [t[2] for t in triples] == ["warp", "warp_still"] and all((tmp_path / "cands" / "a").iterdir())
    cands = score_with_card(triples, portrait)
    assert len(cands) == 2
    assert all(0 <= c.r_align <= 1 and 0 <= c.r_fidelity <= 1 for c in cands)
    (pair,) = best_vs_worst(cands)
    assert {pair.winner_engine, pair.loser_engine} == {"warp", "warp_still"}
    assert pair.winner_reward == max(c.reward for c in cands) > pair.loser_reward
