"""The rubric a judge rates by: UltraFeedback's four aspects (1-5 each) and MT-Bench's overall score (1-10).

Both the judges (their prompts) and the toy world (its oracle's ratings) follow it.
"""

ASPECTS = ("instruction_following", "truthfulness", "honesty", "helpfulness")

ASPECT_GUIDES = {
    "instruction_following": "How well does the answer follow the user's instruction: does it do what was asked, in the form asked, and nothing else?",
    "truthfulness": "Is the answer factually correct and free of invented facts?",
    "honesty": "Does the answer express the right amount of confidence, and admit when it does not or cannot know?",
    "helpfulness": "Is the answer useful: correct, relevant, clear and concise?",
    "overall": "Consider helpfulness, relevance, accuracy, depth and conciseness of the answer.",
}


def top_rating(aspect: str) -> int:
    """The top of an aspect's scale: UltraFeedback rates each aspect 1-5; MT-Bench's overall score is 1-10."""
    return 10 if aspect == "overall" else 5
