import HistoCore
