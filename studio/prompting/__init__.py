"""The Prompt Lab core: techniques, answer extraction, voting, cached runs."""
