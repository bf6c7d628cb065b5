"""Studio backends compose with LangChain as chat models."""

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from studio.backends import GenerationSettings
from studio.langchain import as_langchain


def test_backend_is_a_langchain_chat_model_in_a_chain(llamacpp):
    llm = as_langchain(llamacpp, GenerationSettings(temperature=0, max_tokens=24))
    assert isinstance(llm, BaseChatModel)
    chain = ChatPromptTemplate.from_messages([("user", "What is the capital of {country}? "
                                                       "Answer in one word.")]) | llm | StrOutputParser()
    assert "Paris" in chain.invoke({"country": "France"})


def test_langchain_stream_yields_pieces_that_add_up(llamacpp):
    llm = as_langchain(llamacpp, GenerationSettings(temperature=0, max_tokens=24))
    msgs = [SystemMessage("You answer briefly."),
            HumanMessage("What is the capital of France? Answer in one word.")]
    pieces = [c.content for c in llm.stream(msgs)]
    assert len([p for p in pieces if p]) >= 2
    assert "".join(pieces) == llm.invoke(msgs).content


def test_langchain_stop_and_per_call_settings(llamacpp):
    llm = as_langchain(llamacpp, GenerationSettings(temperature=0, max_tokens=40))
    q = "What is the capital of France? Answer in one word."
    full = llm.invoke(q).content
    first = full.split()[0]
    assert first not in llm.invoke(q, stop=[first]).content
    assert llm.invoke(q, max_tokens=2).response_metadata["completion_tokens"] <= 2
