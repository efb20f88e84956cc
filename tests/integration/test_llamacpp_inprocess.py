def test_the_same_completion_as_the_server(inprocess, smollm2_server) -> None:
    """Greedy decoding on the same llama.cpp: the process boundary changes nothing (this
    caught ChatLlamaCpp forcing RoPE to 10000 on a model trained with 100000)."""
    messages = [
        ("system", "Solve each grade-school math word problem. Think step by step."),
        ("user", "Janet's ducks lay 16 eggs per day. She eats three. How many are left?"),
    ]
    served = smollm2_server.chat_model(max_tokens=32).invoke(messages).content
    assert inprocess.llm.invoke(messages, max_tokens=32).content == served
