from bench.send import main

main()
