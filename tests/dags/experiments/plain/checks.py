def check(samples, response, accept):
    return None
