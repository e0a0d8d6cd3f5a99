"""Question template pools of the closed-ended tasks.

Task 6's three pools are the paper's Figure 16 verbatim. Task 4 and Task 5 pools are
shown in the paper only as figures (14 and 15); these phrasings are the ones the
public release uses (18 for Task 4, one per label; 17 for Task 5, one per temporal label).
``{aspect}`` is the label in lower case.
"""

from __future__ import annotations

TEMPLATE_VERSION = "1"

TASK4_TEMPLATES: tuple[str, ...] = (
    "Is there evidence of {aspect} on the CT images?",
    "Is {aspect} identifiable on the CT scan?",
    "Can {aspect} be clearly seen on the CT scan?",
    "Can signs of {aspect} be recognized on the CT scan?",
    "Can {aspect} be detected on the CT scan?",
    "Can {aspect} be observed on the CT scan?",
    "Does the CT scan demonstrate {aspect}?",
    "Does the CT scan exhibit {aspect}?",
    "Does the CT scan reveal {aspect}?",
    "Does the CT scan suggest {aspect}?",
    "Does this CT image present {aspect}?",
    "Does this CT image show {aspect}?",
    "Is there any presence of {aspect} on the CT scan?",
    "Is {aspect} apparent on the CT images?",
    "Is {aspect} confirmed by the CT findings?",
    "Is {aspect} noted on the CT images?",
    "Is {aspect} present on the CT scan?",
    "Is {aspect} visible on the CT images?",
)

TASK5_TEMPLATES: tuple[str, ...] = (
    "According to the CT scan, how would you categorize the {aspect}?",
    "According to the CT scan, what is the current status of {aspect}?",
    "After reviewing the CT scan, how would you interpret the presence of {aspect}?",
    "Based on the CT scan, what is the condition of the {aspect}?",
    "Based on the CT scan, what is the current status of the {aspect}?",
    "Based on the CT scan, what is your evaluation of the {aspect}?",
    "Based on the current CT scan, how would you classify the {aspect}?",
    "Considering the CT scan, what is your assessment of the {aspect}?",
    "Given the present CT findings, what is the nature of the {aspect}?",
    "How should we interpret the {aspect} from the current CT findings?",
    "How would you categorize the {aspect} based on the CT scan?",
    "How would you classify the {aspect} based on the current CT scan?",
    "How would you classify the {aspect} observed in the current CT scan?",
    "How would you classify the {aspect} seen in the CT imaging?",
    "In light of the CT findings, how should we interpret the {aspect}?",
    "In light of the current CT imaging, how should we classify the {aspect}?",
    "With reference to the CT scan, what is the classification for {aspect}?",
)

# Paper, Figure 16.
TASK6_FLUCTUATION_PREFIXES: tuple[str, ...] = (
    "Based on sequence history and current CT.",
    "From multi-stage sequences and present CT.",
    "Sequence trend plus current CT defines status.",
    "History and CT decide lesion category.",
    "Stage-wise sequences + current CT = status.",
    "Past sequences and CT determine lesion type.",
    "Multi-phase sequences guide CT-based judgment.",
    "Classification uses sequences and current image.",
    "Lesion state from timeline and CT.",
    "CT reflects pattern of prior sequences.",
    "Lesion judged by sequences and scan.",
    "Sequence evolution and CT define outcome.",
    "Diagnosis combines sequence history and CT.",
    "CT confirms what sequences suggest.",
    "Lesion behavior from past to CT.",
    "CT status follows sequence progression.",
    "Final label from history and CT.",
)

TASK6_SEQUENCE_PREFIXES: tuple[str, ...] = (
    "{aspect} sequence was: {seq}.",
    "Past sequences of {aspect}: {seq}.",
    "Previous {aspect} states: {seq}.",
    "Earlier {aspect} sequences: {seq}.",
    "Historical {aspect} status: {seq}.",
    "Sequence history for {aspect}: {seq}.",
    "Prior {aspect} timeline: {seq}.",
    "Scans showed {aspect} as: {seq}.",
    "Old sequences for {aspect}: {seq}.",
    "Earlier CTs showed {aspect} as: {seq}.",
    "Before now, {aspect} showed {seq}.",
    "{aspect} had: {seq} in earlier scans.",
    "{aspect} progression: {seq}.",
    "In past, {aspect} was: {seq}.",
    "{aspect} over time: {seq}.",
    "{aspect} condition history: {seq}.",
    "Recorded sequences for {aspect}: {seq}.",
)

TASK6_QUESTION_PATTERNS: tuple[str, ...] = (
    "What is the current status of {aspect} based on previous sequences?",
    "Based on past sequences, what is the current condition of {aspect}?",
    "How does {aspect} appear now compared to its sequence history?",
    "What type of lesion is {aspect} now, given its temporal sequence?",
    "From sequence history to now, what best describes {aspect}?",
    "How has {aspect} changed from past sequences to the current CT?",
    "What does the current CT show about {aspect} based on earlier sequences?",
    "Given its sequence history, what is {aspect} in the current CT?",
    "How has {aspect} evolved from earlier scan sequences to now?",
    "What lesion category applies to {aspect} in the current CT?",
    "How is {aspect} classified now using past sequence data?",
    "What does the CT show for {aspect} considering its sequence history?",
    "What is the current CT assessment of {aspect} based on prior sequences?",
    "How has {aspect} progressed according to its temporal sequence?",
    "What does {aspect} currently represent, based on past sequences?",
    "Based on the temporal sequence, what is the present status of {aspect}?",
    "From prior sequences to now, what is the CT-based status of {aspect}?",
)

TASK6_NOTE = "(Note: 0 indicates absence, and 1 indicates presence.)"

# The four temporal classes, letters and answer strings exactly as the release has them.
TEMPORAL_CHOICES: dict[str, str] = {
    "A": "Refractory Lesion (Persistent or recurrent, now present)",
    "B": "Resolved Lesion (Previously present or recurrent, now absent)",
    "C": "New Lesion (Absent previously, now present)",
    "D": "No Abnormality (Always absent)",
}
