import HistoCore
print("histodiff")
