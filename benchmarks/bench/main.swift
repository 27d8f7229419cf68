import HistoCore
print("bench")
